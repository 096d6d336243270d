# The embedded default: SimpleBaseline on the synthetic MPII set (128 px images), sized to finish
# on a 2-core CPU in a few minutes. Everything not changed here is the stock mmpose recipe of
# ./mpii_td-hm_res50_256x256.py (Adam 5e-4 at batch 512, scaled linearly with the real batch;
# MSRA heatmaps; flip test; PCKh by MpiiPCKAccuracy).
_base_ = ['./mpii_td-hm_res50_256x256.py']

# Half the input (128x128) and heatmap (32x32) of the stock recipe; the figures fill the
# synthetic 128 px images, so the crops keep their full resolution.
codec = dict(
    type='MSRAHeatmap', input_size=(128, 128), heatmap_size=(32, 32), sigma=2)

# 3 epochs of 2,000 synthetic images at batch 32 (189 iterations); transfer/mpii_config.py turns
# epochs into iterations.
train_cfg = dict(max_epochs=3, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', begin=0, end=20, start_factor=0.001, by_epoch=False),  # warm-up
    dict(type='MultiStepLR', begin=0, end=3, milestones=[2], gamma=0.1, by_epoch=True),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=3, save_best=None, max_keep_ckpts=1))
log_processor = dict(window_size=20)

model = dict(head=dict(decoder=codec))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', shift_prob=0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs')
]
# Loading in the main process: on 2 cores a loader worker only competes with the model, and
# starting and ending one costs seconds (the cpu budget's 20-iteration stage: 17.7 s here, 19.5 s
# with one persistent worker, measured on 2 idle cores).
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=val_pipeline))
test_dataloader = val_dataloader
