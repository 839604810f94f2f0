# Packer >= 1.9 (HCL2 data sources, required_plugins). Install the plugin with `packer init`.
packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}
