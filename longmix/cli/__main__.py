from longmix.cli.app import main

main()
