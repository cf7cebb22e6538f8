# UPerNet-R50 on PASCAL VOC 2012 (train 1,464 images), epoch-based.          seed 002
# Result in the seed: 67.91 mIoU (val 1,449).
#
# v1.0: mmseg's upernet_r50 model and VOC 2012 dataset with an epoch-based SGD +
#       PolyLR schedule instead of schedule_40k. The seed first kept mmseg's
#       InfiniteSampler, so an "epoch" never ended and no checkpoint or validation
#       ever ran; the dataset fragment here uses DefaultSampler.
#       Seed-exact schedule and checkpoints: PolyLR steps once per epoch
#       (`by_epoch=True`, no convert_to_iter_based: the LR is constant within an
#       epoch and drops in 200 steps), a checkpoint every 10 epochs, all kept, no
#       best checkpoint. v1.1 is this run with a per-iteration PolyLR and save_best.
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

# the seed's scheduler, as written: stepped by ParamSchedulerHook after each epoch
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=200, by_epoch=True)
]
train_cfg = dict(max_epochs=200, val_begin=1, val_interval=10)
# the seed's CheckpointHook: no max_keep_ckpts, no save_best (_delete_ drops the
# runtime fragment's max_keep_ckpts=3 and save_best='mIoU')
default_hooks = dict(
    checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=True, interval=10))
