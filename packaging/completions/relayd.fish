# fish completion for relayd
# Account names and queue IDs come from 'relayd __complete', which asks the
# status socket (account names also from the configuration) and prints
# nothing when it cannot.
function __relayd_complete
    set -l cfg
    set -l words (commandline -opc)
    if set -l i (contains -i -- -c $words)
        set cfg -c $words[(math $i + 1)]
    end
    relayd __complete $argv[1] $cfg 2>/dev/null
end

set -l commands serve demo authorize queue reload status doctor check-config web-login rotate-key sendmail hash-password version help
set -l queuecmds list show flush hold release retry delete
complete -c relayd -f
complete -c relayd -n "not __fish_seen_subcommand_from $commands" -a "$commands"
complete -c relayd -n "not __fish_seen_subcommand_from $commands" -l help -l version
complete -c relayd -n "__fish_seen_subcommand_from help" -a "$commands"
complete -c relayd -n "__fish_seen_subcommand_from serve authorize queue reload status doctor rotate-key web-login" -s c -r -F -d "configuration file"
complete -c relayd -n "__fish_seen_subcommand_from authorize" -a "(__relayd_complete accounts)" -d account
complete -c relayd -n "__fish_seen_subcommand_from authorize" -l device -l browser
complete -c relayd -n "__fish_seen_subcommand_from authorize" -l refresh-token-file -r -F
complete -c relayd -n "__fish_seen_subcommand_from authorize" -l progress-interval -x
complete -c relayd -n "__fish_seen_subcommand_from queue; and not __fish_seen_subcommand_from $queuecmds" -a "$queuecmds"
complete -c relayd -n "__fish_seen_subcommand_from queue" -l json
complete -c relayd -n "__fish_seen_subcommand_from flush hold release delete" -a "(__relayd_complete accounts)" -d account
complete -c relayd -n "__fish_seen_subcommand_from show hold release retry delete" -a "(__relayd_complete ids)" -d "queue id"
complete -c relayd -n "__fish_seen_subcommand_from status reload doctor web-login" -l socket -r -F
complete -c relayd -n "__fish_seen_subcommand_from status doctor" -l json
complete -c relayd -n "__fish_seen_subcommand_from status" -l alive -d "liveness check: exit 0 when the daemon answers"
complete -c relayd -n "__fish_seen_subcommand_from doctor" -l timeout -x
complete -c relayd -n "__fish_seen_subcommand_from doctor" -l send-test
complete -c relayd -n "__fish_seen_subcommand_from doctor" -a "(__relayd_complete accounts)" -d account
complete -c relayd -n "__fish_seen_subcommand_from serve" -l grace -x
complete -c relayd -n "__fish_seen_subcommand_from rotate-key" -l new-key -r -F -d "key file"
complete -c relayd -n "__fish_seen_subcommand_from check-config" -l as -x -a "(__fish_complete_users)"
complete -c relayd -n "__fish_seen_subcommand_from check-config" -F
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s t -d "recipients from To:, Cc: and Bcc:"
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s i -d "a single dot does not end the message"
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s f -x -d "envelope sender"
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s F -x -d "sender's name"
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s C -r -F -d "configuration file"
complete -c relayd -n "__fish_seen_subcommand_from sendmail" -s v -d "print the queue ID"
