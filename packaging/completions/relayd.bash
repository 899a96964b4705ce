# bash completion for relayd
# Account names and queue IDs come from 'relayd __complete', which asks the
# status socket (account names also from the configuration) and prints
# nothing when it cannot.
_relayd_complete() {
	local cfg=() i
	for ((i = 2; i < COMP_CWORD; i++)); do
		if [ "${COMP_WORDS[i]}" = "-c" ]; then cfg=(-c "${COMP_WORDS[i + 1]}"); fi
	done
	relayd __complete "$1" "${cfg[@]}" 2>/dev/null
}
_relayd() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} cmd=${COMP_WORDS[1]}
	local commands="serve demo authorize queue reload status doctor check-config web-login rotate-key sendmail hash-password version help"
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
		return
	fi
	case $prev in
	-c | --refresh-token-file | --socket | --new-key)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	esac
	case $cmd in
	authorize)
		COMPREPLY=($(compgen -W "-c --device --browser --refresh-token-file --progress-interval $(_relayd_complete accounts)" -- "$cur")) ;;
	queue)
		local sub="" i
		for ((i = 2; i < COMP_CWORD; i++)); do
			case ${COMP_WORDS[i]} in list | show | flush | hold | release | retry | delete) sub=${COMP_WORDS[i]} ;; esac
		done
		case $sub in
		"") COMPREPLY=($(compgen -W "-c --json list show flush hold release retry delete" -- "$cur")) ;;
		flush) COMPREPLY=($(compgen -W "$(_relayd_complete accounts)" -- "$cur")) ;;
		show | retry) COMPREPLY=($(compgen -W "$(_relayd_complete ids)" -- "$cur")) ;;
		hold | release | delete) COMPREPLY=($(compgen -W "$(_relayd_complete accounts) $(_relayd_complete ids)" -- "$cur")) ;;
		*) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
		esac
		;;
	status) COMPREPLY=($(compgen -W "-c --socket --json --alive" -- "$cur")) ;;
	doctor) COMPREPLY=($(compgen -W "-c --socket --json --timeout --send-test $(_relayd_complete accounts)" -- "$cur")) ;;
	reload) COMPREPLY=($(compgen -W "-c --socket" -- "$cur")) ;;
	rotate-key) COMPREPLY=($(compgen -W "-c --new-key" -- "$cur")) ;;
	web-login) COMPREPLY=($(compgen -W "-c --socket" -- "$cur")) ;;
	sendmail) COMPREPLY=($(compgen -W "-t -i -oi -f -F -C -v --" -- "$cur")) ;;
	serve) COMPREPLY=($(compgen -W "-c --grace" -- "$cur")) ;;
	check-config) COMPREPLY=($(compgen -W "--as" -- "$cur") $(compgen -f -- "$cur")) ;;
	help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
	*) COMPREPLY=($(compgen -f -- "$cur")) ;;
	esac
}
complete -F _relayd relayd
