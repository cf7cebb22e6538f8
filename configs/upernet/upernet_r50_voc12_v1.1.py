# v1.1 (from v1.0) — per-iteration PolyLR and a best checkpoint.                 seglab
#       Not in the seeds, not run (67.91 is v1.0's, which steps PolyLR per epoch).
#       convert_to_iter_based=True: per-iteration PolyLR decays smoothly instead of
#       in 200 per-epoch steps (same LR at each epoch boundary, no staircase in
#       between); save_best='mIoU' keeps the best checkpoint by validation mIoU
#       beside the newest 3 (v1.0 keeps every 10th-epoch checkpoint and no best one).
_base_ = ['./upernet_r50_voc12_v1.0.py']

param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=200, by_epoch=True,
         convert_to_iter_based=True)
]
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3, save_best='mIoU', rule='greater'))
