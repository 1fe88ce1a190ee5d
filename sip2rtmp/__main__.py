from sip2rtmp.cli.main import main

main()
