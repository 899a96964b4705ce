# bash completion for relayd
_relayd() {
	local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]}
	local commands="serve demo authorize queue reload status doctor check-config hash-password version help"
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
		return
	fi
	case $cmd in
	authorize) COMPREPLY=($(compgen -W "-c --device --browser --refresh-token-file --progress-interval" -- "$cur")) ;;
	queue) COMPREPLY=($(compgen -W "-c --json list show flush hold release retry delete" -- "$cur")) ;;
	status) COMPREPLY=($(compgen -W "-c --socket --json" -- "$cur")) ;;
	doctor) COMPREPLY=($(compgen -W "-c --socket --json --timeout" -- "$cur")) ;;
	reload) COMPREPLY=($(compgen -W "-c --socket" -- "$cur")) ;;
	serve) COMPREPLY=($(compgen -W "-c --grace" -- "$cur")) ;;
	help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
	*) COMPREPLY=($(compgen -f -- "$cur")) ;;
	esac
}
complete -F _relayd relayd
