"""Joint reconstruction with spectral smoothness plus a soft low-rank prior along energy (few species)."""

DESCRIPTION = "joint-smooth + spectral_low_rank: the stack pulled towards its best 8-spectrum approximation"

# Rank 8: a few phases plus each edge's shift direction, with room to spare (rank 5 and 8 gave the same
# chemistry on the small preset). Weight 10 (small preset, 40 epochs, against the truth): Ni E0 RMSE
# 0.30 -> 0.17 eV and Ni/Mn error 26 -> 16 %, but Mn E0 0.26 -> 0.29 eV; at weight 30 Mn E0 reads
# 0.34 eV: the prior then removes the rim's small Mn edge shift along with the noise. Weight 3 is the
# gentler trade (Ni E0 0.25 eV, Ni/Mn 20 %, Mn E0 unchanged). experiments/results/low_rank_prior_small.md
OPTIONS = {"priors": {"spectral_smoothness": {"weight": 3.0, "delta": None}, "spectral_low_rank": {"weight": 10.0, "rank": 8}}}
