# Official recipe: mmseg's segformer_mit-b2_8xb2-160k_ade20k-512x512 (45.58 mIoU in
# the model zoo) as an epoch-based run. Model, AdamW (lr 6e-5 at a total batch of 16,
# head x10), warm-up + PolyLR over 160k iterations, pipeline and batch are mmseg's,
# inherited unchanged; 160k iterations x 16 images = 127 epochs of ADE20K's 20,210
# training images. Compare with the seed's v1.x: `seglab config diff`.
_base_ = ['mmseg::segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py']

gpu_count, samples_per_gpu = 8, 2
official_iters, dataset_size = 160000, 20210
max_epochs = round(official_iters * gpu_count * samples_per_gpu / dataset_size)
interval_epochs = 13  # mmseg: every 16,000 iterations

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
