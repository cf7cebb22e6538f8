# The CPU demo on the ADE20K layout: the VOC demo's model, pipeline and schedule
# with ADE20K's dataset (150 classes). ADE20KDataset sets reduce_zero_label=True,
# which the pipeline's LoadAnnotations follows: 0 = "other" -> 255 (ignored),
# 1..150 -> 0..149.
_base_ = ['./segformer_mit-b0_synth-voc_v1.0.py']

data_root = 'data/synth/ADEChallengeData2016'
train_dataloader = dict(dataset=dict(
    type='ADE20KDataset', data_root=data_root, ann_file='',
    data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(dataset=dict(
    type='ADE20KDataset', data_root=data_root, ann_file='',
    data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
model = dict(decode_head=dict(num_classes=150))
