# seglab runtime: mmseg's defaults + seglab's registrations, TensorBoard, epoch-based hooks.
_base_ = ['mmseg::_base_/default_runtime.py']

# Registers seglab's loader (safe weights_only resume), CPU-capable DDP, ...
custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)

vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # keep 3 epoch checkpoints plus the best one by validation mIoU
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=3,
                    save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

# Official recipes assume a total batch of 16 (e.g. 8 GPUs x 2);
# `--cfg-options auto_scale_lr.enable=True` scales the LR linearly to yours.
auto_scale_lr = dict(enable=False, base_batch_size=16)
