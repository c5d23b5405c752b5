from neardup.cli import main

main(prog_name="neardup")
