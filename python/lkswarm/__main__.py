from lkswarm.cli import main

main()
