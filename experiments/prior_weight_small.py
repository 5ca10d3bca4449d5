"""Spectral-prior weight on the `small` preset: object NRMSE, positions and chemistry vs truth.

Usage: python experiments/prior_weight_small.py DATA_DIR '[{"priors": {"spectral_smoothness": {"weight": 3.0, "delta": null}}}, ...]'
where DATA_DIR comes from `ptyjax simulate --preset small -o DATA_DIR`. Prints one line per setting.
"""
import sys, json, time, numpy as np
from ptyjax import fit, recipes, metrics
from ptyjax.data import Dataset
from ptyjax.chemistry import analyze
from ptyjax.cluster import cluster
data = sys.argv[1]; truth = data + '/truth.h5'
ds = Dataset.open(data)
for i, kw in enumerate(json.loads(sys.argv[2])):
    model = kw.pop('model', 'joint-smooth')
    cfg = recipes.fit_config(model, **kw)
    t = time.time()
    res = fit.reconstruct(ds, cfg, progress=False)
    out = f'prior_weight_{i}.h5'
    fit.save_reconstruction(out, res)
    m = metrics.compare_to_truth(out, truth)
    analyze(out); cluster(out)
    c = metrics.compare_chemistry_to_truth(out, truth)
    print(model, kw, '%.0fs' % (time.time() - t), 'nrmse %.4f' % np.median(m['nrmse']), 'pos %.1f' % (m['position_rms_refined_m'] * 1e9),
          {k: round(v, 3) for k, v in c.items() if 'rmse' in k or 'error' in k or 'rand' in k or 'n_groups' in k}, flush=True)
