# qload(1) completion for bash: its flags (from `qload --help`), --mode's
# values, directories for --data and files for --pipeline. Installed as
# share/bash-completion/completions/qload; or: source qload.bash

_qload()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()
    case $prev in
    --data)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        ;;
    --pipeline)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        ;;
    --mode)
        COMPREPLY=($(compgen -W "append merge" -- "$cur"))
        ;;
    --target | --model | --poll)
        ;;
    *)
        COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" --help 2>/dev/null |
            grep -oE -- '--[a-z][a-z-]*' | sort -u | tr '\n' ' ') --version" -- "$cur"))
        ;;
    esac
}

complete -F _qload qload
