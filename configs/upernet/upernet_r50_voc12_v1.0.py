# UPerNet-R50 on PASCAL VOC 2012 (train 1,464 images), epoch-based.          seed 002
# Result in the seed: 67.91 mIoU (val 1,449).
#
# v1.0: mmseg's upernet_r50 model and VOC 2012 dataset with an epoch-based SGD +
#       PolyLR schedule instead of schedule_40k. The seed first kept mmseg's
#       InfiniteSampler, so an "epoch" never ended and no checkpoint or validation
#       ever ran; the dataset fragment here uses DefaultSampler.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../_base_/datasets/pascal_voc12.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/sgd_poly_epoch.py',
]

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))

train_cfg = dict(max_epochs=200, val_begin=1, val_interval=10)
default_hooks = dict(checkpoint=dict(interval=10))
