"""An IPython kernel starts, runs numpy/astropy cells, and shuts down (jupyter_client)."""
import json

from jupyter_client.manager import start_new_kernel

manager, client = start_new_kernel(kernel_name="python3", startup_timeout=300)
outputs = []
try:
    for code in ("import numpy as np; float(np.arange(10).sum())",
                 "from astropy import units as u; str((3 * u.km).to(u.m))"):
        reply = client.execute_interactive(code, timeout=300,
                                           output_hook=lambda msg: outputs.append(msg))
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"cell failed: {reply['content']}")
finally:
    client.stop_channels()
    manager.shutdown_kernel(now=False)
results = [m["content"]["data"]["text/plain"] for m in outputs
           if m["msg_type"] == "execute_result"]
ok = results == ["45.0", "'3000.0 m'"]
print(json.dumps({"workload": "kernel", "ok": ok, "results": results}))
raise SystemExit(0 if ok else 1)
