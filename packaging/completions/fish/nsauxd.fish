complete -c nsauxd -l config -d 'Configuration file (TOML). The default path may be absent: built-in defaults apply' -r -F
complete -c nsauxd -l runtime-dir -d 'Runtime directory: lock file and control socket (mode 0600)' -r -F
complete -c nsauxd -l state-dir -d 'State directory: durable journals (registrations)' -r -F
complete -c nsauxd -l netns-dir -d 'Directory of namespace files to follow; repeat for several. Replaces the file\'s `netns_dirs` (default /run/netns)' -r -F
complete -c nsauxd -l rpcbind-socket -d 'The portmapper\'s path socket in this mount namespace (overrides `[rpcbind] local_path`; "none" disables it). Tests point it into a private directory' -r -F
complete -c nsauxd -l no-host-netns -d 'Do not serve the daemon\'s own (host) namespace'
complete -c nsauxd -s h -l help -d 'Print help'
complete -c nsauxd -s V -l version -d 'Print version'
