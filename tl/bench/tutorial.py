"""The baseline: PyTorch's transfer-learning tutorial loop, reimplemented faithfully.

ImageFolder + PIL decode, RandomResizedCrop(224) + flip per image per epoch, batch 4, 4
workers, SGD(lr=1e-3, momentum=0.9), StepLR(7, 0.1), fp32, train then val phase each epoch,
best weights kept by deep copy. `freeze` is the tutorial's "ConvNet as fixed feature
extractor": requires_grad=False on the backbone, a new head, model.train() in the train phase.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torchvision import datasets, models, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LITE0 = "tf_efficientnet_lite0"  # timm name of the shipped lite0 weights


def build_model(name: str, num_classes: int, pretrained: bool) -> tuple[nn.Module, list]:
    if name == "efficientnet_lite0":
        import timm

        from tl.models import lite

        model = timm.create_model(LITE0)
        if pretrained:
            lite.load_pretrained(model, LITE0)
        model.reset_classifier(num_classes)
        return model, list(model.get_classifier().parameters())
    model = getattr(models, name)(weights="DEFAULT" if pretrained else None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, list(model.fc.parameters())


def run(root: str, model_name: str, strategy: str, epochs: int, pretrained: bool,
        batch_size: int = 4, num_workers: int = 4) -> dict:
    tf = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
    }
    image_datasets = {x: datasets.ImageFolder(f"{root}/{x}", tf[x]) for x in ("train", "val")}
    loaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch_size, shuffle=True,
                                              num_workers=num_workers) for x in ("train", "val")}
    sizes = {x: len(image_datasets[x]) for x in ("train", "val")}
    model, head_params = build_model(model_name, len(image_datasets["train"].classes), pretrained)
    if strategy == "freeze":
        for p in model.parameters():
            p.requires_grad = False
        for p in head_params:
            p.requires_grad = True
        params = head_params
    else:
        params = model.parameters()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    best_acc, best_wts, epoch_seconds, val_accs = 0.0, copy.deepcopy(model.state_dict()), [], []
    for _ in range(epochs):
        start = time.perf_counter()
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            running_corrects = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_corrects += torch.sum(preds == labels.data).item()
            if phase == "train":
                scheduler.step()
            acc = running_corrects / sizes[phase]
            if phase == "val":
                val_accs.append(acc)
                if acc > best_acc:
                    best_acc, best_wts = acc, copy.deepcopy(model.state_dict())
        epoch_seconds.append(time.perf_counter() - start)
    model.load_state_dict(best_wts)
    return {"best_val_acc": best_acc, "epoch_seconds": epoch_seconds, "val_acc": val_accs,
            "images_per_epoch": sizes["train"] + sizes["val"]}
