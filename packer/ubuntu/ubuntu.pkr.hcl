# Canonical's Ubuntu 24.04 EKS image + nodeagent (deb).
#   packer init packer/ubuntu
#   packer build -var kubernetes_version=1.34 -var region=us-east-1 packer/ubuntu

locals {
  ubuntu_arch = var.arch == "arm64" ? "arm64" : "amd64"
}

# Canonical's SSM layout: /aws/service/canonical/ubuntu/eks/<release>/<k8s>/stable/current/
# <amd64|arm64>/hvm/<volume type>/ami-id. The 24.04 images are ebs-gp3 (20.04/22.04: ebs-gp2).
data "amazon-parameterstore" "source_ami" {
  name   = "/aws/service/canonical/ubuntu/eks/24.04/${var.kubernetes_version}/stable/current/${local.ubuntu_arch}/hvm/ebs-gp3/ami-id"
  region = var.region
}

source "amazon-ebs" "ubuntu" {
  region        = var.region
  source_ami    = data.amazon-parameterstore.source_ami.value
  instance_type = local.instance_type
  subnet_id     = var.subnet_id
  vpc_id        = var.vpc_id
  ssh_username  = "ubuntu"

  ami_name        = "${var.ami_name_prefix}-ubuntu2404-${var.arch}-k8s${var.kubernetes_version}-nodeagent${local.nodeagent_version}-${local.build_stamp}"
  ami_description = "Ubuntu 24.04 EKS node (k8s ${var.kubernetes_version}, ${var.arch}) with nodeagent ${local.nodeagent_version}"
  # Instances launched from the AMI require IMDSv2 by default.
  imds_support = "v2.0"

  # The build instance itself: IMDSv2 only, no extra hop.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags          = merge(local.common_tags, { os = "ubuntu-24.04", source_ami = data.amazon-parameterstore.source_ami.value }, var.extra_tags)
  snapshot_tags = merge(local.common_tags, { os = "ubuntu-24.04" }, var.extra_tags)
}

build {
  sources = ["source.amazon-ebs.ubuntu"]

  provisioner "file" {
    source      = local.package_path
    destination = "/tmp/nodeagent.deb"
  }

  # Only nodeagent.service is enabled: the spot-label oneshot writes a nodeadm drop-in, and
  # Canonical's image joins with /etc/eks/bootstrap.sh instead (see ../user-data/README.md).
  provisioner "shell" {
    inline = [
      "set -eu",
      "sudo cloud-init status --wait >/dev/null || true",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update",
      "cd /tmp && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y ./nodeagent.deb",
      "sudo systemctl enable nodeagent.service",
      "rm -f /tmp/nodeagent.deb",
    ]
  }

  provisioner "shell" {
    script           = "${path.root}/../scripts/verify-install.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["ENABLED_UNITS=nodeagent.service"]
  }
}
