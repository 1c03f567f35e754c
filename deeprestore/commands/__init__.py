"""One module per subcommand of `deeprestore`; `deeprestore.cli` assembles them into the group."""
