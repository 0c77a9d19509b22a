# qctl(1) completion for bash: commands, subcommands, flags, queue names and
# --state values. Commands, subcommands and flags come from `qctl --help` and
# `qctl COMMAND --help`, so they follow the qctl that is run; queue names
# from `qctl stats --json` of the data directory the command line names
# (--data DIR, else $PICKLINE_DATA, else ./pickline-data), read only (qctl
# never creates a data directory for it). Queues whose name starts with _
# (an async_submit stage's waits) are offered once the word starts with _.
# Installed as share/bash-completion/completions/qctl (bash-completion loads
# it on first use); or: source qctl.bash

# _qctl_json_keys: the keys of the top-level object of the JSON on stdin.
_qctl_json_keys()
{
    awk '{ s = s $0 "\n" }
    END {
        n = length(s); depth = 0; i = 1
        while (i <= n) {
            c = substr(s, i, 1)
            if (c == "\"") {
                j = i + 1; str = ""
                while (j <= n) {
                    d = substr(s, j, 1)
                    if (d == "\\") { str = str substr(s, j, 2); j += 2; continue }
                    if (d == "\"") break
                    str = str d; j++
                }
                if (depth == 1) {
                    k = j + 1
                    while (k <= n && substr(s, k, 1) ~ /[ \t\r\n]/) k++
                    if (substr(s, k, 1) == ":") print str
                }
                i = j + 1
                continue
            }
            if (c == "{" || c == "[") depth++
            else if (c == "}" || c == "]") depth--
            i++
        }
    }'
}

# _qctl_queues QCTL DIR CUR: the queue names of DIR for the word CUR.
_qctl_queues()
{
    local q
    for q in $("$1" ${2:+--data "$2"} stats --json 2>/dev/null </dev/null | _qctl_json_keys); do
        [[ $q == _* && $3 != _* ]] && continue
        printf '%s\n' "$q"
    done
}

_qctl()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev= qctl=${COMP_WORDS[0]}
    local dir= cmd= sub= npos=0 i w
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    [[ $qctl == "~/"* ]] && qctl=$HOME/${qctl#"~/"}
    COMPREPLY=()

    # What the words before this one say: --data, the command, its
    # subcommand, and how many arguments it has.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
        --data) dir=${COMP_WORDS[i + 1]}; ((i++)) ;;
        --data=*) dir=${w#--data=} ;;
        --) ;;
        -*)
            # a flag of the command that takes a value: skip the value
            if [[ -n $cmd && ${COMP_WORDS[i + 1]} != -* ]] &&
                "$qctl" $cmd $sub --help 2>/dev/null | grep -qE -- "^ *$w [A-Z]"; then
                ((i++))
            fi
            ;;
        *)
            if [[ -z $cmd ]]; then
                cmd=$w
            elif [[ -z $sub && $npos == 0 ]] &&
                "$qctl" $cmd --help 2>/dev/null | grep -qE "^  $cmd $w( |$)"; then
                sub=$w
            else
                ((npos++))
            fi
            ;;
        esac
    done
    [[ -z $dir && -n $PICKLINE_DATA ]] && dir=$PICKLINE_DATA
    [[ $dir == "~/"* ]] && dir=$HOME/${dir#"~/"}

    case $prev in
    --data)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        return
        ;;
    --pipeline)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return
        ;;
    --state)
        local states=$("$qctl" $cmd $sub --help 2>/dev/null |
            grep -oE -- '--state [a-z]+(\|[a-z]+)+' | head -1 | sed 's/--state //; s/|/ /g')
        [[ -z $states && $cmd == batches ]] && states="open sealed held loading loaded failed"
        [[ -z $states ]] && states="ready delayed reserved buried all"
        COMPREPLY=($(compgen -W "$states" -- "$cur"))
        return
        ;;
    esac

    if [[ $cur == -* ]]; then
        local flags="--version"
        [[ -n $cmd ]] && flags=$("$qctl" $cmd $sub --help 2>/dev/null | grep -oE -- '--[a-z][a-z-]*')
        COMPREPLY=($(compgen -W "$(printf '%s\n' --data --json --help $flags | sort -u)" -- "$cur"))
        return
    fi
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$("$qctl" --help 2>/dev/null |
            awk '/^commands:/ { f = 1; next } /^$/ { f = 0 } f { print $1 }')" -- "$cur"))
        return
    fi
    case $cmd in
    put | reserve | kick | peek | purge | pause | resume | configure | stats | queues | export | import)
        ((npos == 0)) && COMPREPLY=($(compgen -W "$(_qctl_queues "$qctl" "$dir" "$cur")" -- "$cur"))
        ;;
    batches | rejects | schema)
        if [[ -z $sub && $npos == 0 ]]; then
            COMPREPLY=($(compgen -W "$("$qctl" $cmd --help 2>/dev/null |
                awk -v c="$cmd" '/^  / && $1 == c && NF > 2 { print $2 }')" -- "$cur"))
        fi
        ;;
    compact)
        if ((npos == 0)); then
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -- "$cur"))
        fi
        ;;
    esac
}

complete -F _qctl qctl
