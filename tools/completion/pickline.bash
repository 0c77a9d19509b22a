# pickline(1) completion for bash: the commands, their flags, pipeline files
# (*.yml, *.yaml) and directories for --data. Installed as
# share/bash-completion/completions/pickline; or: source pickline.bash

_pickline()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev= cmd= i
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} != -* ]] && { cmd=${COMP_WORDS[i]}; break; }
    done
    case $prev in
    --data)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        return
        ;;
    --port)
        return
        ;;
    esac
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "run check --help --version" -- "$cur"))
    elif [[ $cur == -* ]]; then
        case $cmd in
        run) COMPREPLY=($(compgen -W "--data --port --verbose --help" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "--help" -- "$cur")) ;;
        esac
    else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -X '!*.yml' -- "$cur") $(compgen -f -X '!*.yaml' -- "$cur") $(compgen -d -- "$cur"))
    fi
}

complete -F _pickline pickline
