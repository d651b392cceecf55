from egovlp.cli import main

main()
