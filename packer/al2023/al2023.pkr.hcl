# EKS-optimised Amazon Linux 2023 + nodeagent (rpm).
#   packer init packer/al2023
#   packer build -var kubernetes_version=1.34 -var region=us-east-1 -var arch=arm64 packer/al2023

# The source AMI comes from EKS's public SSM parameter: no account ids or owner filters here.
data "amazon-parameterstore" "source_ami" {
  name   = "/aws/service/eks/optimized-ami/${var.kubernetes_version}/amazon-linux-2023/${var.arch}/standard/recommended/image_id"
  region = var.region
}

source "amazon-ebs" "al2023" {
  region        = var.region
  source_ami    = data.amazon-parameterstore.source_ami.value
  instance_type = local.instance_type
  subnet_id     = var.subnet_id
  vpc_id        = var.vpc_id
  ssh_username  = "ec2-user"

  ami_name        = "${var.ami_name_prefix}-al2023-${var.arch}-k8s${var.kubernetes_version}-nodeagent${local.nodeagent_version}-${local.build_stamp}"
  ami_description = "EKS AL2023 node (k8s ${var.kubernetes_version}, ${var.arch}) with nodeagent ${local.nodeagent_version}"
  # Instances launched from the AMI require IMDSv2 by default.
  imds_support = "v2.0"

  # The build instance itself: IMDSv2 only, no extra hop.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags          = merge(local.common_tags, { os = "al2023", source_ami = data.amazon-parameterstore.source_ami.value }, var.extra_tags)
  snapshot_tags = merge(local.common_tags, { os = "al2023" }, var.extra_tags)
}

build {
  sources = ["source.amazon-ebs.al2023"]

  provisioner "file" {
    source      = local.package_path
    destination = "/tmp/nodeagent.rpm"
  }

  provisioner "shell" {
    inline = [
      "set -eu",
      "sudo dnf install -y /tmp/nodeagent.rpm",
      "sudo systemctl enable nodeagent.service nodeagent-spot-label.service",
      "rm -f /tmp/nodeagent.rpm",
    ]
  }

  provisioner "shell" {
    script           = "${path.root}/../scripts/verify-install.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["ENABLED_UNITS=nodeagent.service nodeagent-spot-label.service"]
  }
}
