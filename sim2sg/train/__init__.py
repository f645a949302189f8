"""sim2sg.train: plain training functions (torchvision-references / nanoGPT style).

    from sim2sg.train.config import TrainConfig
    from sim2sg.train.fit import fit
    fit(TrainConfig(source="data/clevr", out="runs/clevr", steps=2000))

Modules: align (the alignment vocabulary), config (TrainConfig), data (datasets, collate), augment,
rng (the run's generators), steps (the one step loop), checkpoint (the one format), fit, predict
(outputs -> records and graphs), adabn, draw, toydata. Submodules import torch; import them where
needed (the CLI imports them inside commands).
"""
