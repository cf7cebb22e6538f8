# Official recipe: mmseg's upernet_r50_4xb4-40k_voc12aug-512x512 (75.92 mIoU in the
# model zoo) as an epoch-based run. Model, optimizer, LR schedule, pipeline and batch
# are mmseg's, inherited unchanged; only the loop counts epochs: 40k iterations x 16
# images = 60 epochs of VOC-aug's 10,582 images (mmseg's ConcatDataset of the 1,464
# VOC train images and the 9,118 SBD-only images of aug.txt).
# The seeds' UPerNet runs (v1.0, v2.0) differ from this; `seglab config diff` shows how.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py']

gpu_count, samples_per_gpu = 4, 4
official_iters, dataset_size = 40000, 1464 + 9118
max_epochs = round(official_iters * gpu_count * samples_per_gpu / dataset_size)
interval_epochs = 6  # mmseg: every 4,000 iterations (661 per epoch)

custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)
train_dataloader = dict(sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=interval_epochs)
default_hooks = dict(
    logger=dict(log_metric_by_epoch=True),
    checkpoint=dict(by_epoch=True, interval=interval_epochs, max_keep_ckpts=3,
                    save_best='mIoU'))
log_processor = dict(by_epoch=True)
visualizer = dict(vis_backends=[dict(type='LocalVisBackend'),
                                dict(type='TensorboardVisBackend')])
