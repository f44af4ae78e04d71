# An image layer with stoke, baked with Packer on EC2.
#
# The build instance is launched from the previous layer's image (whose stoke runs at boot like on
# any instance), so the provisioners:
#   1. wait for that boot work (`stoke status --wait`),
#   2. install or upgrade the stoke .deb (only in the layer that introduces or upgrades stoke),
#   3. drop this layer's config into /etc/stoke/stoke.d/NN-<layer>.yaml and validate it,
#   4. install the layer's own software,
#   5. run the layer's acceptance checks (`stoke verify --layer`, JUnit XML for the pipeline),
#   6. `stoke clean` LAST, so every instance of the new image behaves as a first boot.
#
# The VM tests (vm-tests/, scenario "bake-then-boot") run steps 1, 3 and 5 against a real guest.
# See docs/baking.md.
#
#   packer init packaging/packer && packer build -var source_ami=ami-0123... packaging/packer

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "source_ami" {
  type        = string
  description = "The previous layer's image (e.g. the foundation image)."
}

variable "layer" {
  type        = string
  default     = "app"
  description = "Name of this layer; also the name of its stoke.d file."
}

variable "layer_order" {
  type        = string
  default     = "50"
  description = "Two-digit prefix: stoke.d files merge in lexical order, later wins."
}

variable "stoke_deb" {
  type        = string
  default     = "target/debian/stoke_0.1.0-1_amd64.deb"
  description = "Path of the stoke package built with `cargo deb`; empty to keep the installed one."
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type    = string
  default = "m5d.large" # with instance store, so the build also exercises the disks module
}

locals {
  stamp = formatdate("YYYYMMDD-hhmm", timestamp())
}

source "amazon-ebs" "layer" {
  region        = var.region
  source_ami    = var.source_ami
  instance_type = var.instance_type
  ssh_username  = "admin"
  ami_name      = "${var.layer}-${local.stamp}"

  # IMDSv2 only: stoke uses session tokens.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = {
    Layer   = var.layer
    BakedBy = "packer"
  }
}

build {
  sources = ["source.amazon-ebs.layer"]

  # 1. The previous layer's stoke is doing this instance's boot work: wait for it. Exit 0 = done,
  #    2 = done but degraded (warnings): go on; 1 = a module failed, 3 = timed out: stop the build
  #    and show why.
  provisioner "shell" {
    inline = [
      "rc=0; sudo stoke status --wait --timeout 900 >/dev/null || rc=$?",
      "if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then sudo stoke status; exit 1; fi",
    ]
  }

  # 2. Install or upgrade stoke (omit in layers that do not change it). The package enables the
  #    units but never starts them: stoke does not re-run on the build instance.
  provisioner "file" {
    source      = var.stoke_deb
    destination = "/tmp/stoke.deb"
  }
  provisioner "shell" {
    inline = [
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/stoke.deb",
      "rm -f /tmp/stoke.deb",
    ]
  }

  # 3. This layer's stoke config: one file per layer. Validate it at bake time so a typo fails the
  #    build (with file:line:column), not the boot.
  provisioner "file" {
    source      = "stoke.d/${var.layer_order}-${var.layer}.yaml"
    destination = "/tmp/${var.layer_order}-${var.layer}.yaml"
  }
  provisioner "shell" {
    inline = [
      "sudo install -D -m 0644 /tmp/${var.layer_order}-${var.layer}.yaml /etc/stoke/stoke.d/${var.layer_order}-${var.layer}.yaml",
      "sudo stoke schema /etc/stoke/stoke.d/${var.layer_order}-${var.layer}.yaml",
    ]
  }

  # 4. The layer's own software.
  provisioner "shell" {
    inline = [
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y nginx",
    ]
  }

  # 5. This layer's acceptance checks, now: a failure fails the build. The JUnit file is
  #    downloaded for the CI server. (Checks that need a booted instance of the new image,
  #    such as its data volume, say `verify: false` and run only at boot: see docs/ready.md.)
  provisioner "shell" {
    inline = [
      "sudo stoke verify --layer ${var.layer_order}-${var.layer} --junit /tmp/stoke-checks.xml",
    ]
  }
  provisioner "file" {
    direction   = "download"
    source      = "/tmp/stoke-checks.xml"
    destination = "stoke-checks-${var.layer}.xml"
  }

  # 6. Last: forget this build instance, so the image's instances each get a first boot
  #    (new hostname, host keys, disks, DNS). Also drop the machine-id, as for any baked image.
  provisioner "shell" {
    inline = [
      "sudo stoke clean --logs",
      "sudo truncate -s 0 /etc/machine-id",
      "sudo rm -f /etc/ssh/ssh_host_*",
    ]
  }
}
