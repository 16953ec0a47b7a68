"""torchrun child for test_neurons: collect with the keyword arguments given as JSON (its
``settings`` as a dict of ``StoreSettings`` fields)."""

import json
import sys

from solulab.neurons.collect import collect
from solulab.neurons.settings import StoreSettings

if __name__ == "__main__":
    kwargs = json.loads(sys.argv[3])
    settings = StoreSettings(**kwargs.pop("settings"))
    collect(sys.argv[1], out=sys.argv[2], settings=settings, **kwargs)
