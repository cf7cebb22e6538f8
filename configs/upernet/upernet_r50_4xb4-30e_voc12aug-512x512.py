# Official recipe: mmseg's upernet_r50_4xb4-20k_voc12aug-512x512 (74.82 mIoU in the
# model zoo) as an epoch-based run: the 60-epoch baseline on mmseg's 20k schedule
# (PolyLR over 20,000 iterations = 30 epochs).
_base_ = ['./upernet_r50_4xb4-60e_voc12aug-512x512.py']

gpu_count, samples_per_gpu = 4, 4  # (a config cannot read its base's variables)
official_iters, dataset_size = 20000, 1464 + 9118
max_epochs = round(official_iters * gpu_count * samples_per_gpu / dataset_size)
interval_epochs = 3  # mmseg: every 2,000 iterations
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=official_iters, by_epoch=False)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=interval_epochs)
default_hooks = dict(checkpoint=dict(interval=interval_epochs))
