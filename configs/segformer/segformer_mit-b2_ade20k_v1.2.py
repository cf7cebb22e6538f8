# v1.2 (from v1.0; v1.1 abandoned) — train from the ImageNet weights again.     seed 000
#       LR 6e-6 -> 3e-5; AMP (AmpOptimWrapper, dynamic loss scale) to fit memory;
#       gradient clipping max_norm 10; FocalLoss 0.7 -> 0.5 and DiceLoss
#       1.3 -> 1.0; warm-up start_factor 1e-7 -> 1e-6 and PolyLR ending at
#       max_epochs. This run produced NaN losses under AMP (see v1.3).
_base_ = ['./segformer_mit-b2_ade20k_v1.0.py']

learning_rate = 3e-5
model = dict(decode_head=dict(loss_decode=[
    dict(type='FocalLoss', use_sigmoid=True, loss_weight=0.5),
    dict(type='DiceLoss', loss_weight=1.0, ignore_index=255),
]))
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    clip_grad=dict(max_norm=10, norm_type=2),
    optimizer=dict(lr=learning_rate))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=True, begin=20, end=200),
]
