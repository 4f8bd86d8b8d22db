"""Runs INSIDE a notebook container: start a real IPython kernel and run a cell (threads, numpy, astropy)."""

from jupyter_client.manager import start_new_kernel

km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
try:
    msg_id = kc.execute("import numpy, astropy, threading; t=threading.Thread(target=lambda: None); t.start(); t.join(); print(numpy.ones(3).sum())")
    out = []
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if m["msg_type"] == "stream": out.append(m["content"]["text"])
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" and m["parent_header"].get("msg_id") == msg_id: break
    print("KERNEL-OUT", "".join(out).strip())
finally:
    kc.stop_channels(); km.shutdown_kernel(now=True)
