# v1.3 (from v1.2) — the fix proposed for v1.2's NaN loss under AMP.            seed 000
#       LR 3e-5 -> 2e-5; clip_grad max_norm 10 -> 2; decode-head lr_mult 10 -> 3;
#       warm-up start_factor 1e-6 -> 5e-7; restart from the ImageNet weights.
#       (The seed's v1.4 "back to v1 with tuned hyper-parameters" records no values,
#       so it has no config here.)
_base_ = ['./segformer_mit-b2_ade20k_v1.2.py']

learning_rate = 2e-5
optim_wrapper = dict(
    clip_grad=dict(max_norm=2, norm_type=2),
    optimizer=dict(lr=learning_rate),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=3.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7, by_epoch=True, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=True, begin=20, end=200),
]
