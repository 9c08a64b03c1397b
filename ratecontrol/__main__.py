from ratecontrol.cli import main

main()
