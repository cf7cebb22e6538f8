# v2.1 (from v2.0) — per-iteration PolyLR and a best checkpoint.                 seglab
#       Not in the seeds, not run (75.24 is v2.0's, which steps PolyLR per epoch).
#       convert_to_iter_based=True: per-iteration PolyLR decays smoothly instead of
#       in 200 per-epoch steps (same LR at each epoch boundary, no staircase in
#       between); save_best='mIoU' keeps the best checkpoint by validation mIoU
#       beside the newest 3 (v2.0 keeps only the newest 3, so the best epoch can be
#       deleted).
_base_ = ['./upernet_r50_voc12aug_v2.0.py']

param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=200, by_epoch=True,
         convert_to_iter_based=True)
]
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
