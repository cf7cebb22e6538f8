# ADEChallengeData2016 (150 classes, train 20,210 / val 2,000), epoch-based.
# Labels on disk: 0 = "other", 1..150 = classes; reduce_zero_label=True maps
# them to 255 (ignored) and 0..149.
_base_ = ['mmseg::_base_/datasets/ade20k.py']

# An epoch-based loop needs a sampler that ends (see pascal_voc12.py).
train_dataloader = dict(sampler=dict(type='DefaultSampler', shuffle=True))
