# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_nsauxctl_global_optspecs
    string join \n runtime-dir= json h/help V/version
end

function __fish_nsauxctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_nsauxctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_nsauxctl_using_subcommand
    set -l cmd (__fish_nsauxctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -s V -l version -d 'Print version'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "status" -d 'Daemon summary'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "ns" -d 'Namespaces'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "attach" -d 'Track a namespace that has no file in a watched directory'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "detach" -d 'Stop tracking an attached namespace'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "reload" -d 'Re-read the daemon\'s configuration (like SIGHUP, but reports errors)'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "rpc" -d 'Portmapper tables'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "dns" -d 'DNS resolver endpoints'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "ntp" -d 'NTP service'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "metrics" -d 'Print the Prometheus metrics once (from the observation socket), or serve them over HTTP with --listen as an unprivileged exporter'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "oci-hook" -d 'OCI runtime hook: reads the container state on stdin; attaches at createRuntime, detaches at poststop (see README, "Containers")'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "validate" -d 'Check a configuration file offline'
complete -c nsauxctl -n "__fish_nsauxctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand status" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand status" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and not __fish_seen_subcommand_from list help" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and not __fish_seen_subcommand_from list help" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and not __fish_seen_subcommand_from list help" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and not __fish_seen_subcommand_from list help" -f -a "list" -d 'List tracked namespaces: name, id, source, services, since'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and not __fish_seen_subcommand_from list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and __fish_seen_subcommand_from list" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and __fish_seen_subcommand_from list" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and __fish_seen_subcommand_from help" -f -a "list" -d 'List tracked namespaces: name, id, source, services, since'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ns; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand attach" -l pid -d 'Follow this process\'s namespace; it is detached when the process exits' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand attach" -l path -d 'Open this namespace file (e.g. a container runtime\'s)' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand attach" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand attach" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand attach" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand detach" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand detach" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand detach" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand reload" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand reload" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -f -a "list" -d 'Registration tables: NS, prog/vers, netid, address, owner'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -f -a "stats" -d 'Per-namespace statistics (what `rpcinfo -m` shows: calls per procedure, SET/UNSET, lookups, remote calls)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -f -a "unset" -d 'Remove registrations (operator override of owner checks)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and not __fish_seen_subcommand_from list stats unset help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from list" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from list" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from list" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from stats" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from stats" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from stats" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from unset" -l ns -d 'Namespace' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from unset" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from unset" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from unset" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from help" -f -a "list" -d 'Registration tables: NS, prog/vers, netid, address, owner'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Per-namespace statistics (what `rpcinfo -m` shows: calls per procedure, SET/UNSET, lookups, remote calls)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from help" -f -a "unset" -d 'Remove registrations (operator override of owner checks)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand rpc; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -f -a "stats" -d 'Per-namespace statistics'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -f -a "flush" -d 'Empty the cache'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -f -a "add" -d 'Add a local record (answered authoritatively, forward and reverse)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -f -a "remove" -d 'Remove a local record added at run time'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and not __fish_seen_subcommand_from stats flush add remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from stats" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from stats" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from stats" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from flush" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from flush" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from flush" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from flush" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from add" -l ns -d 'Namespace' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from add" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from add" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from remove" -l ns -d 'Namespace' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from remove" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from remove" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Per-namespace statistics'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from help" -f -a "flush" -d 'Empty the cache'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a local record (answered authoritatively, forward and reverse)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a local record added at run time'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand dns; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -f -a "status" -d 'Clock status served and where stratum/refid come from'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -f -a "stats" -d 'Per-namespace statistics'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and not __fish_seen_subcommand_from status stats help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from status" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from status" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from status" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from stats" -l ns -d 'Only this namespace (default: all where the service runs)' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from stats" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from stats" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from help" -f -a "status" -d 'Clock status served and where stratum/refid come from'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Per-namespace statistics'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand ntp; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand metrics" -l listen -d 'Serve the metrics over HTTP at `/metrics` on this address (e.g. 127.0.0.1:9755) until stopped, instead of printing them once' -r
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand metrics" -l socket -d 'The daemon\'s observation socket (default: RUNTIME_DIR/observe.sock; see `[observe]`)' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand metrics" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand metrics" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand metrics" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand oci-hook" -l stage -d 'The hook stage (default: from the state\'s `status`: `stopped` detaches, others attach)' -r -f -a "create-runtime\t'Namespaces exist, the container has not started: attach'
prestart\t'Older name of the same point: attach'
poststart\t'After start (late but harmless): attach'
poststop\t'The container is gone: detach'"
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand oci-hook" -l config -d 'nsaux\'s configuration file, for `[hooks] on_daemon_down`' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand oci-hook" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand oci-hook" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand oci-hook" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand validate" -l config -d 'The file. Without it, what nsauxd would load: /etc/nsaux/nsaux.toml, or the built-in defaults when that file does not exist' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand validate" -l runtime-dir -d 'The daemon\'s runtime directory' -r -F
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand validate" -l json -d 'Print JSON for scripts instead of tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand validate" -s h -l help -d 'Print help'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "status" -d 'Daemon summary'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "ns" -d 'Namespaces'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "attach" -d 'Track a namespace that has no file in a watched directory'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "detach" -d 'Stop tracking an attached namespace'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "reload" -d 'Re-read the daemon\'s configuration (like SIGHUP, but reports errors)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "rpc" -d 'Portmapper tables'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "dns" -d 'DNS resolver endpoints'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "ntp" -d 'NTP service'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "metrics" -d 'Print the Prometheus metrics once (from the observation socket), or serve them over HTTP with --listen as an unprivileged exporter'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "oci-hook" -d 'OCI runtime hook: reads the container state on stdin; attaches at createRuntime, detaches at poststop (see README, "Containers")'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "validate" -d 'Check a configuration file offline'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and not __fish_seen_subcommand_from status ns attach detach reload rpc dns ntp metrics oci-hook validate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from ns" -f -a "list" -d 'List tracked namespaces: name, id, source, services, since'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from rpc" -f -a "list" -d 'Registration tables: NS, prog/vers, netid, address, owner'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from rpc" -f -a "stats" -d 'Per-namespace statistics (what `rpcinfo -m` shows: calls per procedure, SET/UNSET, lookups, remote calls)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from rpc" -f -a "unset" -d 'Remove registrations (operator override of owner checks)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from dns" -f -a "stats" -d 'Per-namespace statistics'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from dns" -f -a "flush" -d 'Empty the cache'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from dns" -f -a "add" -d 'Add a local record (answered authoritatively, forward and reverse)'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from dns" -f -a "remove" -d 'Remove a local record added at run time'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from ntp" -f -a "status" -d 'Clock status served and where stratum/refid come from'
complete -c nsauxctl -n "__fish_nsauxctl_using_subcommand help; and __fish_seen_subcommand_from ntp" -f -a "stats" -d 'Per-namespace statistics'
