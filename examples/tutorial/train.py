"""Section 3 of the PyTorch Lightning course, ported by changing the imports only.

The course trains on torchvision's MNIST; with no download here, `synthetic_mnist` makes
tensors of the same shape (1x28x28 images, 10 classes) whose labels a model can learn.
Everything from `class LitModel` down is the course's code as written.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, random_split

import lightjob as pl  # was: import pytorch_lightning as pl
from lightjob import Trainer  # was: from pytorch_lightning import Trainer


def synthetic_mnist(n=6000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=generator)
    projection = torch.randn(28 * 28, 10, generator=generator)
    labels = (images.view(n, -1) @ projection).argmax(dim=1)
    return TensorDataset(images, labels)


pl.seed_everything(0)
dataset = synthetic_mnist()
train_set, val_set = random_split(dataset, [5000, 1000])
train_dataloader = DataLoader(train_set, batch_size=64)
val_dataloader = DataLoader(val_set, batch_size=64)


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer_1 = nn.Linear(28 * 28, 128)
        self.layer_2 = nn.Linear(128, 10)
        self.criterion = nn.CrossEntropyLoss()

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.layer_1(x)
        x = F.relu(x)
        x = self.layer_2(x)
        return x

    def training_step(self, batch, batch_idx):
        data, labels = batch
        outputs = self(data)
        loss = self.criterion(outputs, labels)
        self.log("train_loss", loss)  # Opcional: logging automático
        return loss

    def validation_step(self, batch, batch_idx):
        data, labels = batch
        outputs = self(data)
        loss = self.criterion(outputs, labels)
        self.log("val_loss", loss)  # Opcional: logging automático
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return optimizer


if __name__ == "__main__":
    model = LitModel()
    trainer = Trainer(max_epochs=5)
    trainer.fit(model, train_dataloaders=train_dataloader, val_dataloaders=val_dataloader)
