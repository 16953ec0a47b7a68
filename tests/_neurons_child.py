"""torchrun child for test_neurons: collect with the keyword arguments given as JSON."""

import json
import sys

from solulab.neurons.collect import collect

if __name__ == "__main__":
    collect(sys.argv[1], out=sys.argv[2], **json.loads(sys.argv[3]))
