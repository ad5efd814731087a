from tl.bench.run import main

main()
