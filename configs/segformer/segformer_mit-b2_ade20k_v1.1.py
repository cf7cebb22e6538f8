# v1.1 (from v1.0) — the failed attempt, kept so the mistake stays visible.     seed 000
#       Loaded v1.0's epoch_120.pth (a converged model whose LR had decayed),
#       cut the crop to 480x480 to fit a larger batch (value not recorded), and jumped
#       the LR back up to 6e-5. Result: mIoU collapsed to ~0 ("catastrophic
#       forgetting"). Raising the LR on a converged checkpoint destroys it; a
#       fine-tune should start at or below the checkpoint's last LR.
_base_ = ['./segformer_mit-b2_ade20k_v1.0.py']

learning_rate = 6e-5
crop_size = (480, 480)
load_from = 'work_dirs/segformer_mit-b2_ade20k_v1.0/epoch_120.pth'

# v1.0's pipeline with the smaller crop (RandomCrop and Pad); a config file cannot
# edit an inherited list in place, so the list is restated.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomCutOut', prob=0.5, n_holes=(1, 3),
         cutout_ratio=[(0.02, 0.02), (0.2, 0.2)], fill_in=(0, 0, 0), seg_fill_in=255),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(data_preprocessor=dict(size=crop_size))
optim_wrapper = dict(optimizer=dict(lr=learning_rate))
