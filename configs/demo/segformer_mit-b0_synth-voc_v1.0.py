# Demo: SegFormer MiT-B0 (random init) on a generated VOC-layout dataset, CPU-sized.
# `seglab demo` generates data/synth/ and runs this config end to end; the
# test suite trains it on a fresh copy. Same pipeline stages as VOC 2012,
# scaled to 128 px images so a few epochs on a laptop CPU reach a clear mIoU.
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    '../_base_/datasets/pascal_voc12.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw_poly_epoch.py',
]

data_root = 'data/synth/VOCdevkit/VOC2012'
crop_size = (128, 128)
scale = (160, 128)
max_epochs = 6

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=21))

# A model trained from scratch on tiny data wants a larger step than fine-tuning.
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# Warm up for 10 iterations (not a whole epoch: a demo epoch is only ~36 steps).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
default_hooks = dict(logger=dict(interval=10))
