# PASCAL VOC 2012 + SBD ("VOC-aug": 10,582 training images), epoch-based.
# Needs SegmentationClassAug/ and ImageSets/Segmentation/aug.txt (made from SBD).
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

# An epoch-based loop needs a sampler that ends (see pascal_voc12.py).
train_dataloader = dict(sampler=dict(type='DefaultSampler', shuffle=True))
