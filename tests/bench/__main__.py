from tests.bench.run import main
import sys

sys.exit(main())
