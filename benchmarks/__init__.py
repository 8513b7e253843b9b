"""objfs's benchmarks (``scripts/bench``): kept out of the ``objfs`` package, which does not
import them; they import nats and nats-py's ObjectStore on purpose, to measure against them."""
