# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Redshifts of many synthetic galaxy spectra
# family: astronomy
# models: ElasticNotebook JWST set (spectral reduction: continuum fit, cross-correlation, tables)
# stresses: a wide 2-D float array, polynomial fits, FFT cross-correlation over a grid, result tables
# %% [parameters]
N_SPEC = 3000
N_PIX = 4096
# %% [quick]
N_SPEC = 100
N_PIX = 1024
# %%
import numpy as np
import pandas as pd
# %%
rng = np.random.default_rng(99)
loglam = np.linspace(np.log(3600), np.log(9800), N_PIX)
wave = np.exp(loglam)
rest_lines = {"OII": 3727.1, "Hb": 4861.3, "OIII": 5006.8, "Ha": 6562.8, "SII": 6716.4}
# %%
z_true = rng.uniform(0.01, 0.35, N_SPEC)
amps = rng.lognormal(1.0, 0.5, (N_SPEC, len(rest_lines)))
slopes = rng.normal(0, 0.3, N_SPEC)
# %%
spectra = 1 + slopes[:, None] * (loglam - loglam.mean())[None, :]
for j, lam in enumerate(rest_lines.values()):
    centre = np.log(lam * (1 + z_true))[:, None]
    spectra += amps[:, j:j + 1] * np.exp(-0.5 * ((loglam[None, :] - centre) / 3e-4) ** 2)
spectra += rng.normal(0, 0.15, spectra.shape)
spectra.nbytes / 1e6
# %%
x = (loglam - loglam.mean()) / loglam.std()
coeffs = np.polynomial.polynomial.polyfit(x, spectra.T, 3)
continuum = np.polynomial.polynomial.polyval(x, coeffs)
flat = spectra - continuum
# %%
template = np.zeros(N_PIX)
for lam in rest_lines.values():
    template += np.exp(-0.5 * ((loglam - np.log(lam)) / 3e-4) ** 2)
dlog = loglam[1] - loglam[0]
# %%
def best_redshift(block):
    """Lag of the cross-correlation peak between each spectrum and the rest-frame template."""
    n = 2 * N_PIX
    xc = np.fft.irfft(np.fft.rfft(block, n) * np.conj(np.fft.rfft(template, n)), n)
    lag = np.argmax(xc[:, : N_PIX // 2], axis=1)
    return np.exp(lag * dlog) - 1
# %%
z_est = np.concatenate([best_redshift(flat[i:i + 256]) for i in range(0, N_SPEC, 256)])
results = pd.DataFrame({"z_true": z_true, "z_est": z_est})
results["dz"] = (results.z_est - results.z_true) / (1 + results.z_true)
results.dz.abs().describe()
# %%
line_flux = {name: np.trapezoid(flat * (np.abs(wave[None, :] - lam * (1 + z_est[:, None])) < 15), wave, axis=1)
             for name, lam in rest_lines.items()}
fluxes = pd.DataFrame(line_flux)
bpt = pd.concat([results, fluxes], axis=1)
bpt.head()
