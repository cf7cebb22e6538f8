# v3.0 (from v2.0) — fine-tune v2's final weights with a 10x lower LR.          seed 001
#       lr 6e-5 -> 6e-6, warm-up 20 epochs from start_factor 1e-7, another 200 epochs.
#       The seed first ran this with `--resume`: the new LR, warm-up and schedule
#       were all silently ignored (optimizer and scheduler state come from the
#       checkpoint). A fine-tune loads weights only (`load_from`, without
#       `--resume`) and needs no backbone init_cfg.
_base_ = ['./segformer_mit-b2_voc12aug_v2.0.py']

learning_rate = 6e-6
warmup_epochs = 20
warmup_start_factor = 1e-7
load_from = 'work_dirs/segformer_mit-b2_voc12aug_v2.0/epoch_200.pth'

model = dict(backbone=dict(init_cfg=None))
optim_wrapper = dict(optimizer=dict(lr=learning_rate))
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_start_factor, by_epoch=True, begin=0,
         end=warmup_epochs),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=True, begin=warmup_epochs,
         end=200 + 1),
]
