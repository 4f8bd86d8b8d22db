"""numpy, astropy and matplotlib work a typical analysis session does (plots rendered with
the Agg backend, as the notebook's inline backend does, saved as PNG, PDF and SVG)."""
import io
import json
import os

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

rng = np.random.default_rng(42)
matrix = rng.normal(size=(200, 200))
inverse = np.linalg.inv(matrix)
identity_error = float(np.abs(matrix @ inverse - np.eye(200)).max())
spectrum = np.abs(np.fft.rfft(rng.normal(size=4096)))
distance = (np.sqrt(3.0**2 + 4.0**2) * 9.0 * u.m).to(u.km)
sep = SkyCoord(ra=10 * u.deg, dec=20 * u.deg).separation(SkyCoord(ra=11 * u.deg, dec=20 * u.deg))
when = Time("2026-01-01T00:00:00", scale="utc").tt.isot
path = os.path.join(os.environ.get("HOME", "/tmp"), "image.fits")
fits.PrimaryHDU(matrix.astype(np.float32)).writeto(path, overwrite=True)
with fits.open(path, memmap=True) as hdul:
    shape = list(hdul[0].data.shape)
table = Table({"flux": spectrum[:10], "id": np.arange(10)})
table.write(os.path.join("/tmp", "table.ecsv"), overwrite=True)
back = Table.read(os.path.join("/tmp", "table.ecsv"))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
left.plot(np.arange(spectrum.size), spectrum, label="spectrum")
left.set_yscale("log")
left.legend()
right.imshow(matrix, cmap="viridis", origin="lower")
right.set_title(f"{distance:.1f}")
png = os.path.join(os.environ.get("HOME", "/tmp"), "plot.png")
fig.savefig(png, dpi=80)
sizes = {}
for fmt in ("pdf", "svg"):
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    sizes[fmt] = buffer.tell()
plt.close(fig)
with open(png, "rb") as handle:
    png_ok = handle.read(8) == b"\x89PNG\r\n\x1a\n"
ok = identity_error < 1e-8 and shape == [200, 200] and len(back) == 10 and png_ok \
    and min(sizes.values()) > 1000
print(json.dumps({"workload": "scientific", "ok": ok, "distance": f"{distance:.3f}",
                  "separation_deg": round(float(sep.deg), 4), "tt": when, "plot_bytes": sizes}))
raise SystemExit(0 if ok else 1)
