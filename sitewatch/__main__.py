from sitewatch.cli import main

main()
