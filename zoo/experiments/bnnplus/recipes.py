"""The experiment's recipes, arms, budgets and seeds, and the rules by which it reads its
results."""

from __future__ import annotations

BNN_RECIPE = "binarynet_fashion_mnist"
MELIUSNET_RECIPE = "meliusnettiny_fashion_mnist"
BASELINE = "BNN"
# The BNN+ layers with every ingredient off: the STE network, computed the same way.
_ALL_OFF = {
    "binarization": "bnn+",
    "bnn_activation": "ste",
    "bnn_regularizer": "none",
    "bnn_alpha_in_forward": False,
    "bnn_weight_clip": None,  # the network's own clip (BNN: 1.0; MeliusNet "lce": none)
}
DEFAULT_BETAS = (2.0, 5.0, 10.0)
# The experiment's settings are its own, not the package defaults (which it decides): the
# full BNN+ arm uses larq's SignSwish β = 5 and Manhattan λ = 0.3 (per weight, mean), the
# package defaults when the experiment was designed, and λ is swept by factors of 10 above.
FULL_BNNPLUS_BETA = 5.0
FULL_BNNPLUS_LAMBDA = 0.3
DEFAULT_LAMBDAS = (0.3, 3.0, 30.0)
# Budgets (epochs) and seeds. Step 1 is short; step 2 gives the cosine schedule time to
# settle (validation accuracy flattens in its last epochs); step 3 keeps MeliusNetTiny's
# recipe budget. Steps 2 and 3 use seeds that step 1 did not.
DEFAULT_EPOCHS = {1: 3, 2: 15, 3: 4}
DEFAULT_STEP1_SEED = 0
DEFAULT_SEEDS = (1, 2, 3)
# --quick: the whole pipeline in minutes, on the first images only.
QUICK = {"epochs": {1: 1, 2: 1, 3: 1}, "seeds": (1, 2), "train_limit": 1024,
         "betas": (FULL_BNNPLUS_BETA,), "lambdas": (FULL_BNNPLUS_LAMBDA,)}  # fmt: skip
# A change of validation accuracy over the last epochs of step 2 below this many points counts
# as "flattened": about the standard error of the accuracy on 6,000 validation images at 90 %.
FLAT_POINTS = 0.4
FLAT_EPOCHS = 3


def attribution_arms(betas=DEFAULT_BETAS, lambdas=DEFAULT_LAMBDAS) -> dict[str, dict]:
    """Step 1's configurations: name -> recipe overrides of the BNN recipe."""
    arms: dict[str, dict] = {BASELINE: {}}
    for beta in betas:
        arms[f"SignSwish β={beta:g}"] = {**_ALL_OFF, "bnn_activation": "sign_swish",
                                         "bnn_beta": float(beta)}  # fmt: skip
    for lam in lambdas:
        arms[f"Manhattan λ={lam:g}"] = {**_ALL_OFF, "bnn_regularizer": "manhattan",
                                        "bnn_lambda": float(lam)}  # fmt: skip
    arms["α in forward"] = {**_ALL_OFF, "bnn_alpha_in_forward": True}
    arms["BNN+ (all)"] = {**_ALL_OFF, "bnn_activation": "sign_swish", "bnn_beta": FULL_BNNPLUS_BETA,
                          "bnn_regularizer": "manhattan", "bnn_lambda": FULL_BNNPLUS_LAMBDA,
                          "bnn_alpha_in_forward": True}  # fmt: skip
    return arms
