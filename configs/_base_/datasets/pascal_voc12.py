# PASCAL VOC 2012 (train 1,464 / val 1,449), epoch-based.
_base_ = ['mmseg::_base_/datasets/pascal_voc12.py']

# An epoch-based loop needs a sampler that ends: mmseg's InfiniteSampler never
# finishes an epoch, so no checkpoint or validation would ever run (seed 002).
train_dataloader = dict(sampler=dict(type='DefaultSampler', shuffle=True))
