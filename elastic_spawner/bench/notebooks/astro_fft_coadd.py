# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: FFT registration and co-addition of dithered exposures
# family: astronomy
# models: ElasticNotebook JWST set (image stacks, FFT, alignment, power spectra)
# stresses: a 3-D float32 stack, complex FFT arrays, a notebook function used by later cells, Wiener deconvolution
# %% [parameters]
N_FRAMES = 24
SIZE = 1024
# %% [quick]
N_FRAMES = 4
SIZE = 128
# %%
import numpy as np
from numpy.fft import fft2, fftfreq, fftshift, ifft2
# %%
rng = np.random.default_rng(11)
truth = np.zeros((SIZE, SIZE))
pos = rng.integers(0, SIZE, size=(SIZE * 2, 2))
np.add.at(truth, (pos[:, 0], pos[:, 1]), rng.lognormal(5, 1, len(pos)))
f = fftfreq(SIZE)
psf_otf = np.exp(-2 * (np.pi * 2.0) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
truth = np.real(ifft2(fft2(truth) * psf_otf))
# %%
offsets = rng.integers(-25, 26, size=(N_FRAMES, 2))
frames = np.stack([np.roll(truth, tuple(o), axis=(0, 1)) + rng.normal(0, 2.0, truth.shape)
                   for o in offsets]).astype(np.float32)
frames.nbytes / 1e6
# %%
reference_ft = np.conj(fft2(frames[0]))
def phase_correlate(frame):
    """Integer shift of `frame` relative to frame 0 from the peak of the phase correlation."""
    cross = fft2(frame) * reference_ft
    corr = np.abs(ifft2(cross / (np.abs(cross) + 1e-12)))
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    return np.array([(dy + SIZE // 2) % SIZE - SIZE // 2, (dx + SIZE // 2) % SIZE - SIZE // 2])
# %%
measured = np.array([phase_correlate(fr) for fr in frames])
errors = measured - (offsets - offsets[0])
int(np.abs(errors).max())
# %%
aligned = np.stack([np.roll(fr, tuple(-m), axis=(0, 1)) for fr, m in zip(frames, measured)])
coadd = aligned.mean(axis=0)
noise_single, noise_coadd = float(frames[0][:50, :50].std()), float(coadd[:50, :50].std())
# %%
power = np.abs(fftshift(fft2(coadd))) ** 2
ky, kx = np.indices(power.shape) - SIZE // 2
radius = np.hypot(ky, kx).astype(int)
radial_profile = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
# %%
otf_shifted = np.roll(psf_otf, tuple(offsets[0]), axis=(0, 1))
wiener = np.conj(psf_otf) / (np.abs(psf_otf) ** 2 + 1e-3)
deconvolved = np.real(ifft2(fft2(coadd) * wiener))
sharpness = float((deconvolved**2).sum() / (coadd**2).sum())
sharpness
