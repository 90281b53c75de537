from lkswarm.cli.commands import main

main()
