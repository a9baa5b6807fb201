"""One run, two processes: the second waits for the first's result (docs/semantics.md).

Run it twice at once: ``python owned.py app.db & python owned.py app.db; wait``.
"""

import sys
import time

import durable
from durable import Workflow, step


@step
def charge(order_id: str) -> str:
    time.sleep(1)  # long enough for the second process to arrive while this one charges
    return f"charged {order_id} once"


checkout = Workflow("owned-checkout").then(charge)

if __name__ == "__main__":
    print(durable.run(checkout, "order-7", run_id="order-7", db=sys.argv[1]))
