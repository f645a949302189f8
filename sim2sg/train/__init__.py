"""sim2sg.train: data, training loop (plain functions), prediction.

    from sim2sg.train.engine import TrainConfig, fit
    fit(TrainConfig(source="data/clevr", out="runs/clevr", steps=2000))
    from sim2sg.train.predict import predict_dataset, predict_images

Submodules import torch; import them where needed (the CLI imports them inside commands).
"""
