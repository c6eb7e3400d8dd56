# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Source detection on a synthetic sky image
# family: astronomy
# models: ElasticNotebook JWST set (image reduction: background, smoothing, segmentation, catalog)
# stresses: large float images, scipy.ndimage convolution/median filter/labels, cKDTree, catalog DataFrame
# %% [parameters]
SIZE = 3072
N_SOURCES = 6000
# %% [quick]
SIZE = 256
N_SOURCES = 60
# %%
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree
# %%
rng = np.random.default_rng(2022)
true_pos = rng.uniform(12, SIZE - 12, size=(N_SOURCES, 2))
true_flux = rng.lognormal(7, 1.0, N_SOURCES)
psf_sigma = 1.8
# %%
def render(shape, positions, fluxes, sigma):
    """Add a Gaussian PSF per source on a 15x15 stamp (what a simulator would do)."""
    img = np.zeros(shape)
    oy, ox = np.mgrid[-7:8, -7:8]
    for (y, x), f in zip(positions, fluxes):
        y0, x0 = int(y), int(x)
        dy, dx = oy + y0 - y, ox + x0 - x
        img[y0 - 7:y0 + 8, x0 - 7:x0 + 8] += f * np.exp(-(dy**2 + dx**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return img
# %%
sky = render((SIZE, SIZE), true_pos, true_flux, psf_sigma)
yy, xx = np.mgrid[0:SIZE, 0:SIZE]
image = sky + 100.0 + 0.01 * xx + 0.005 * yy + rng.normal(0, 5, size=sky.shape)
del yy, xx
# %%
coarse = ndimage.median_filter(image[::8, ::8], size=9)
background = ndimage.zoom(coarse, 8, order=1)[:SIZE, :SIZE]
residual = image - background
# %%
noise = 1.4826 * np.median(np.abs(residual - np.median(residual)))
noise
# %%
g1 = np.exp(-np.arange(-6, 7) ** 2 / (2 * psf_sigma**2))
kernel = np.outer(g1, g1) / np.outer(g1, g1).sum()
smoothed = ndimage.convolve(residual, kernel, mode="nearest")
smoothed_noise = noise * np.sqrt((kernel**2).sum())
# %%
mask = smoothed > 5 * smoothed_noise
labels, n_found = ndimage.label(mask)
n_found
# %%
idx = np.arange(1, n_found + 1)
centroids = np.array(ndimage.center_of_mass(residual, labels, idx))
catalog = pd.DataFrame({"y": centroids[:, 0], "x": centroids[:, 1],
                        "flux": ndimage.sum(residual, labels, idx),
                        "npix": ndimage.sum(mask, labels, idx)})
catalog = catalog[catalog.npix >= 4].reset_index(drop=True)
# %%
tree = cKDTree(true_pos)
dist, nearest = tree.query(catalog[["y", "x"]].to_numpy())
catalog["matched"] = dist < 2.0
completeness = catalog.matched.sum() / N_SOURCES
completeness
# %%
bright = catalog.nlargest(200, "flux")
stamps = np.stack([residual[int(r.y) - 8:int(r.y) + 8, int(r.x) - 8:int(r.x) + 8]
                   for r in bright.itertuples() if 8 <= r.y < SIZE - 8 and 8 <= r.x < SIZE - 8])
stacked_psf = np.median(stamps / stamps.sum(axis=(1, 2), keepdims=True), axis=0)
stacked_psf.shape
